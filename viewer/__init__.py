"""The Gradio viewer: specialists review, referrers upload, ML engineers watch their models.

An HTTP client of ``consult_api`` only (see ``viewer/client.py``): it imports nothing from the
service, so it runs mounted in ``hoichan serve`` or alone against a remote API.
"""

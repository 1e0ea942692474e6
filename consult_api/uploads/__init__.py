"""Resumable uploads by the tus 1.0 protocol (core, creation, creation-with-upload, termination,
checksum, expiration), stored so that an upload survives a server restart."""

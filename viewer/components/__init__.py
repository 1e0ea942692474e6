"""One module per page (tab), each with a ``create_*`` function returning its named components."""

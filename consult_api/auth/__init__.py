"""Authentication: passwords, JWT bearer tokens, facility API keys."""

"""Users and their roles within a facility."""

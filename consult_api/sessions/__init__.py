"""Live video review sessions of a case: scheduling, invitations, join tokens, signaling, SFUs."""

"""Facilities in tiers and the referral links between them."""

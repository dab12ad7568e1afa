"""Optimisation campaigns: GP + acquisition on the invariant embedding, oracles, executors, SQLite store.

    from invdesign.campaign import Campaign, Target
"""

from invdesign.campaign.campaign import Campaign
from invdesign.campaign.target import Target

__all__ = ["Campaign", "Target"]

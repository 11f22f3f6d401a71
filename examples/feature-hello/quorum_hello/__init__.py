"""An example Quorum feature, installed from outside the tree (see feature.py)."""

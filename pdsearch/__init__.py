"""pdsearch."""

"""Reviews of chargers and disputes about sessions."""

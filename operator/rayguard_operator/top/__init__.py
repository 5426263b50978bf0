"""`rayguard top`: the live memory view, read from the head's Redis (docs/ledger.md)."""

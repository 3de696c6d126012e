"""The app's schema, mapped: which tables and columns are its bookings and its packs, who may
write them, and the SQL the ledger renders from that (docs/mapping.md)."""

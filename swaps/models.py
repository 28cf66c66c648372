"""Control-plane records: model versions, swaps, rollback requests and the audit log."""

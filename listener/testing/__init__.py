"""Test helpers for apps: a ledger driver, throwaway servers, and the pytest plugin (the only module importing pytest)."""

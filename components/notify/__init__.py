"""Notifications: `nerve notifier` turns alert records into webhooks, mails and Alertmanager alerts (docs/alerts.md)."""

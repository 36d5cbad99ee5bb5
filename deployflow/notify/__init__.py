"""Notifications to people (Slack). Delivery failures are returned as data, never raised."""

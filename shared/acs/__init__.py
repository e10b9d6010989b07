"""Outbound clients of Azure Communication Services (the Identity REST API)."""

"""pushrelay: push for iOS chat apps on Azure Communication Services."""

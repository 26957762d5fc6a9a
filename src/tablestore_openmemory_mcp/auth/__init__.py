"""OAuth 2.1 protected-resource support: token validation, RFC 9728 metadata, scope gates, the page's PKCE login.

Off unless ``MCP_OAUTH_ISSUER`` is set; static ``MCP_AUTH_TOKENS`` keep working beside it.
"""

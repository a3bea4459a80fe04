"""A local stand-in for Asgardeo (OIDC, SCIM2 Users, webhooks), for the local run, tests and benchmarks.

Start one with :func:`asgardeo_standin.server.start_in_thread` or ``python -m asgardeo_standin serve``;
operate it with :class:`asgardeo_standin.client.StandinAdmin`. See docs/standin.md.
"""

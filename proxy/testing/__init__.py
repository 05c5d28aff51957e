"""Test support users may use too: the fake OpenAI-compatible upstream (``python -m proxy.testing.fake_upstream``).

The product never imports this room.
"""

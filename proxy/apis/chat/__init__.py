"""The chat-completions family (``/v1/chat/completions``, and legacy ``/v1/completions`` streams).

Owns: its wire views (``wire``), folding a stream into a ``chat.completion`` (``assemble``), the usage
option and the filter that hides the usage chunk a client did not ask for (``usage_option``), and
playing a non-streamed recording as a stream (``convert``).
"""

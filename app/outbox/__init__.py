"""The outbox: streams with gapless offsets, the events in them, and their relay to Socket.IO."""

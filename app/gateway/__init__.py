"""The Socket.IO gateway: authentication, rooms, replay, chat and typing."""

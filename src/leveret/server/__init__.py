"""The only code that awaits: listeners, sessions, delivery, timers; the composition root."""

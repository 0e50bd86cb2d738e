"""The pure core: model, states and transitions, retry policy, fair share. No I/O here."""

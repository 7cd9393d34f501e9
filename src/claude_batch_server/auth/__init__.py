"""Logging in with OS accounts: who may (`policy`), how a password is checked (`pam`,
`shadow`, `xcrypt`), throttling (`throttle`), and the tokens handed out (`tokens`)."""

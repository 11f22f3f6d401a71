"""The pipeline decides: SMTP-stage checks, parallel engine fan-out, one policy, one decision."""

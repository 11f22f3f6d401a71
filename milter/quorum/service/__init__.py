"""The milter service: libmilter callbacks, the server loop, and the supervising parent."""

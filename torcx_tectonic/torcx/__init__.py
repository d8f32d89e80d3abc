"""The torcx backend: stores, profiles, the signed manifest and the release bucket."""

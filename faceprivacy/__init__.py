"""faceprivacy: privacy tools for face data (de-identification, embedding audits, MRI defacing,
federated face recognition, identity unlearning). See README.md and docs/."""

__version__ = "0.1.0"

"""Federated face recognition with one identity per client (FedFace, IJCB'21), on Flower without Ray.

Modules: ``algorithm`` (client update, FedAvg, spreadout, DP, validation, centralised reference; no FL
framework), ``simulation`` (in-process simulator for thousands of clients, checkpoints/resume), ``backbone`` /
``dlib_split`` (frozen trunk + trainable head of dlib's ResNet), ``evaluate`` (TAR@FAR/EER on held-out
identities), ``experiment`` (the CelebA protocol, JSON/HTML/PNG), ``recipe`` (the Flower run's settings, one
frozen dataclass), ``aggregation`` (clipping, equal-weight mean / median / trimmed mean), ``privacy`` (CSPRNG
noise, RDP accountant), ``flower_app`` (ServerApp, ClientApp, FedFaceStrategy), ``security`` (TLS, node keys,
app hash) and ``guard`` (pinned app processes, loopback-only Control API), ``deploy`` (SuperLink/SuperNode
processes, ``flwr run``), ``cli`` (fed-simulate, fed-server, fed-client). Heavy imports (torch, flwr) stay inside these modules, not here.
"""

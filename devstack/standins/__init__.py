"""Local HTTP stand-ins for the third-party APIs the pipelines call.

One server (`python -m devstack.standins --port N`) answers for every API; each API lives in its
own module and reproduces the real response shapes and error behaviour. Tests inject failures
through the control endpoints under `/_standin/` (see server.py).
"""

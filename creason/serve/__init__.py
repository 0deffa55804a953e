"""Serving a trained model: an autoscaling Ray Serve endpoint with an OpenAI-compatible API and
registry prediction (`app.py`: deployment and routes; `protocol.py`: request and response models;
`handlers.py`: what each route does; `engine.py`: vLLM's async engine; `registry_predict.py`:
record -> training prompt)."""

"""``deeporganseg serve``: the model kept warm on a machine with a GPU, running ``segment`` and
``refine`` for clients over HTTP(S), safe to expose (``docs/server.md``).

Modules: ``request`` (a job request checked before any upload: the command, the allowed flags,
the files' suffixes and sizes, the task and organs against the model), ``jobs`` (the bounded
board of jobs, the worker threads, each job's private folder, progress and cancel), ``work``
(the warm model and what a job runs), ``app`` (the Starlette routes, the token gate, every
refusal one line of JSON), ``serve`` (the operator's settings, the socket, TLS, uvicorn). The
client is :mod:`DeepOrganSegLib.remote`, which never imports this package.
"""

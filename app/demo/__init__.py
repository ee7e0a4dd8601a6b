"""An active labelling campaign on MovieLens ratings, played against the API.

``prefbudget demo`` (see :mod:`app.demo.cli`) starts the service, runs
Algorithm 2 studies with real users as tasks, and compares the result with
baselines fitted by the solver layer directly.
"""

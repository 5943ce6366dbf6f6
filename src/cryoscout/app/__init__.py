"""The cryoscout app: a local web app to review, label and retrain grid screening.

``server`` (FastAPI routes) -> ``project`` (the project folder and its database:
atlases, squares, labels, targets, exports) -> ``operations`` (screening, training
and rescoring, run by ``worker`` in a separate process that ``jobs`` starts).
The operations call the same code as ``cryoscout screen`` and ``cryoscout train``.
"""

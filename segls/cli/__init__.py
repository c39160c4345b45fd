"""The command lines behind tools/*.py: each module parses its arguments, calls segls, prints.

``python tools/<name>.py`` runs ``segls.cli.<name>.run``; tests call the same functions.
`common` holds what they share: config overrides on the command line, the inference flags,
a checkpoint's model for inference, and turning errors into exit statuses.
"""

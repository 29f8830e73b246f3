"""The demo pipelines' Trainer (and Transform) modules, alone in their directory.

TFX packages every .py file beside a Trainer's ``module_file`` into the user-code
wheel and fingerprints them all, so a module living next to the runners would be
retrained whenever a runner changed. Here only the modules themselves count.
"""

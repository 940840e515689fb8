"""faceprivacy.unlearn: forget a person from one image (1-SHUI protocol, MetaUnlearn and baselines).

Modules: ``teacher`` (age/gender teacher labels), ``data`` (split, held-out supports, forget requests), ``model``
(task CNN), ``metaloss`` (learned unlearning loss), ``methods`` (all methods), ``metrics`` (ToW, MIA, NoMUS),
``evaluate`` (benchmark driver + report), ``cli``. See docs/unlearn.md.
"""

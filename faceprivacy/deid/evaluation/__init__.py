"""End-to-end evaluation of de-identification (``faceprivacy eval-deid``), split by stage:

* ``data``: which people are probes, gallery, distractors; where thresholds and reference faces come from;
* ``frames``: the full-frame protocol (faces pasted into larger frames, run through the file pipeline,
  cropped back at their known places) and the aligned-crop protocol (crops tiled into mosaics, run through
  the same ``Deidentifier`` with known landmarks);
* ``stranger``: the "swap with a real stranger" reference method;
* ``measures``: identity, attribute, pose, detection, realism and two-sample measures, each with n and a
  95 % interval from a bootstrap over identities;
* ``report``: the HTML page.

``deid.evaluate`` runs them in order."""

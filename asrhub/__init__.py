"""ASR Hub core.

``asrhub.operators``, ``asrhub.providers`` and ``asrhub.transports`` live in the top-level folders
``operators/``, ``providers/`` and ``transports/`` of a source checkout. A built wheel maps them
into ``asrhub/`` (hatch ``sources`` in pyproject.toml), so an installed hub needs nothing here. In
a checkout (editable install, pytest, scripts run from the repository) :mod:`asrhub._layout`
installs an import finder that maps exactly those three names onto the top-level folders — no
symlinks, nothing that depends on the order files are listed in.
"""

from asrhub._layout import install as _install_source_layout

_install_source_layout(__path__)

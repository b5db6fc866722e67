"""The engine modules the add-on uses: joints, protocol and client.

Inside the installed extension these three files sit beside the add-on's modules (the build copies
them from engine/); in the repository they live in the `engine` package. Import them only from
here, so both layouts work:

    from ._engine import joints, protocol, client
"""

try:  # the built extension: copies next to this file
    from . import joints, protocol, client  # noqa: F401
except ImportError:  # the repository (tests, scripts, `pix2dance render`)
    from engine import joints, protocol, client  # noqa: F401

"""The CLI run with some top-level modules made unimportable, as on a machine without their extra:
`python -c HIDING_CLI mod1,mod2 ARGS...`."""

import textwrap

HIDING_CLI = textwrap.dedent(
    """
    import sys
    hidden = set(sys.argv[1].split(","))

    class Hide:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in hidden:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, Hide())
    from gymwire.sdk.cli import main
    sys.exit(main(sys.argv[2:]))
    """
)

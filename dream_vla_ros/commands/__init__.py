"""The subcommands of ``dream-vla-ros``: each module has ``add_arguments(parser)`` and ``main(args)``.

Modules here import only the standard library at the top; heavy imports happen inside ``main``.
"""

"""Import every module of the genrekit found on sys.path (run from outside the repository, it is
the installed copy): a module that needs a package genrekit does not declare fails here.
``__main__`` is left out (importing it runs the CLI)."""
import importlib
import pkgutil
import sys

PACKAGES = ("genrekit", "genrekit.data_tools", "genrekit.models", "genrekit.evaluation")


def module_names() -> list[str]:
    names = list(PACKAGES)
    for pkg in PACKAGES:
        folder = importlib.import_module(pkg).__path__[0]
        names += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules([folder]) if not m.ispkg and m.name != "__main__"]
    return sorted(names)


def main() -> int:
    failed = []
    names = module_names()
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every failure is listed
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    print(f"imported {len(names) - len(failed)} of {len(names)} genrekit modules from "
          f"{importlib.import_module('genrekit').__path__[0]}")
    for line in failed:
        print(line, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

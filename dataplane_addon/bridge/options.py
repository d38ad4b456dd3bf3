"""The bridge's options, set as the data plane's are: ``--set name=value``, an unknown name being
an error. Those it shares with the data plane are declared once, in ``plane_options``; the
bridge is not mitmproxy and must not import it, so this small loader stands in for mitmproxy's:
it takes the same ``add_option`` declarations and parses ``--set`` for the types they use.
"""

from __future__ import annotations

from dataclasses import dataclass

PARSERS = {str: str, int: int}  # the option types the bridge's options use


class OptionsError(ValueError):
    """A ``--set`` the bridge cannot apply; the message names the option."""


@dataclass
class _Option:
    typespec: type
    value: object
    help: str


class BridgeOptions:
    def __init__(self) -> None:
        self._options: dict[str, _Option] = {}

    def add_option(self, name: str, typespec: type, default, help: str) -> None:
        if typespec not in PARSERS:
            raise TypeError(f"{name}: the bridge's options are {', '.join(t.__name__ for t in PARSERS)}")
        self._options[name] = _Option(typespec, default, help)

    def set(self, *specs: str) -> None:
        """Apply ``name=value`` specs, all or none."""
        unknown = [spec.partition("=")[0] for spec in specs if spec.partition("=")[0] not in self._options]
        if unknown:
            raise OptionsError(f"Unknown option(s): {', '.join(unknown)}")
        values = {}
        for spec in specs:
            name, _, text = spec.partition("=")
            try:
                values[name] = PARSERS[self._options[name].typespec](text)
            except ValueError:
                raise OptionsError(f"{name}: not a valid {self._options[name].typespec.__name__}: {text!r}") from None
        for name, value in values.items():
            self._options[name].value = value

    def __getattr__(self, name: str):
        try:
            return self.__dict__["_options"][name].value
        except KeyError:
            raise AttributeError(name) from None

    def dump_dicts(self) -> dict[str, dict]:
        """As mitmproxy's ``optmanager.dump_dicts``: for ``plane_options.describe``."""
        return {name: {"value": option.value, "help": option.help} for name, option in self._options.items()}

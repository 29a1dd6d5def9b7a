"""What Keras's small configurable objects (initializers, regularizers, constraints) share:
a config, and lookup by name, by class, by config dict or as an instance."""


class Configurable:
    """``get_config``/``from_config`` round trips and a repr from the config."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


def serialize(obj):
    """``{"class_name": ..., "config": ...}``, the form Keras's configs use; None stays."""
    if obj is None:
        return None
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(config, classes, kind):
    """The object a ``serialize`` entry (or Keras's, which has the same two keys) names."""
    cls = classes.get(config.get("class_name"))
    if cls is None:
        raise ValueError(f"Unknown {kind} class {config.get('class_name')!r}; cgru knows "
                         f"{sorted(classes)}.")
    return cls.from_config(config.get("config", {}))


def get(identifier, base, names, classes, kind, hint=""):
    """An instance of ``base`` from a snake-case name (``names``: name -> factory), a class
    name, a config dict, a class, or an instance as is."""
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, base):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier, classes, kind)
    if isinstance(identifier, str):
        make = names.get(identifier.lower()) or classes.get(identifier)
        if make is not None:
            return make()
    raise ValueError(f"Unknown {kind}: {identifier!r}. Expected one of {sorted(names)} or a "
                     f"cgru.{kind}s {base.__name__}.{hint}")

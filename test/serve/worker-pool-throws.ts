/** A handlers module that throws while it loads (a fixture). */
throw new Error("these handlers refuse to load");

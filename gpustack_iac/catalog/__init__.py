"""The GPU catalog: offline offers in gpuhunt's format, matched against resource specs through gpuhunt."""

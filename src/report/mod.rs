//! Reports: pure serializers from a summary and records to bytes (console text,
//! `summary.json`, `requests.csv`, `report.html`), plus compare and sweep tables.

"""The chart of accounts every emulated company starts with: Jurnal's default Indonesian chart, abridged.

(number, name, category): category names as Jurnal shows them. Every emulator creates a new company with it (each in
its own vocabulary: `classification` gives the five classes the others map to), and the default account mapping in
data/account_mapping.csv targets its numbers.
"""

from __future__ import annotations

DEFAULT_CHART: list[tuple[str, str, str]] = [
    ("1-10001", "Kas", "Kas & Bank"),
    ("1-10002", "Rekening Bank", "Kas & Bank"),
    ("1-10100", "Piutang Usaha", "Akun Piutang"),
    ("1-10200", "Persediaan Barang", "Persediaan"),
    ("1-10300", "Piutang Lainnya", "Aktiva Lancar Lainnya"),
    ("1-10402", "Biaya Dibayar Di Muka", "Aktiva Lancar Lainnya"),
    ("1-10500", "PPN Masukan", "Aktiva Lancar Lainnya"),
    ("1-10701", "Aset Tetap - Bangunan", "Aktiva Tetap"),
    ("1-10705", "Aset Tetap - Peralatan Kantor", "Aktiva Tetap"),
    ("1-10751", "Akumulasi Penyusutan - Bangunan", "Depresiasi & Amortisasi"),
    ("2-20100", "Hutang Usaha", "Akun Hutang"),
    ("2-20200", "Hutang Belum Ditagih", "Kewajiban Lancar Lainnya"),
    ("2-20500", "PPN Keluaran", "Kewajiban Lancar Lainnya"),
    ("2-20700", "Hutang Gaji", "Kewajiban Lancar Lainnya"),
    ("3-30000", "Modal Saham", "Ekuitas"),
    ("3-30100", "Laba Ditahan", "Ekuitas"),
    ("3-30200", "Dividen", "Ekuitas"),
    ("3-30999", "Ekuitas Saldo Awal", "Ekuitas"),
    ("4-40000", "Pendapatan", "Pendapatan"),
    ("4-40001", "Pendapatan Jasa", "Pendapatan"),
    ("4-40100", "Diskon Penjualan", "Pendapatan"),
    ("4-40200", "Retur Penjualan", "Pendapatan"),
    ("5-50000", "Beban Pokok Pendapatan", "Harga Pokok Penjualan"),
    ("5-50100", "Diskon Pembelian", "Harga Pokok Penjualan"),
    ("5-50300", "Pengiriman & Pengangkutan", "Harga Pokok Penjualan"),
    ("5-50500", "Biaya Produksi", "Harga Pokok Penjualan"),
    ("6-60001", "Iklan & Promosi", "Beban"),
    ("6-60003", "Bensin, Tol dan Parkir - Penjualan", "Beban"),
    ("6-60100", "Biaya Umum & Administratif", "Beban"),
    ("6-60101", "Gaji", "Beban"),
    ("6-60102", "Upah", "Beban"),
    ("6-60217", "Listrik", "Beban"),
    ("6-60218", "Air", "Beban"),
    ("6-60219", "Telepon & Internet", "Beban"),
    ("6-60401", "Biaya Sewa - Bangunan", "Beban"),
    ("7-70000", "Pendapatan Bunga - Bank", "Pendapatan Lainnya"),
    ("8-80000", "Beban Bunga", "Beban Lainnya"),
    ("8-80999", "Beban Lain - lain", "Beban Lainnya"),
]

# Jurnal numbers its default chart by class: 1 assets, 2 liabilities, 3 equity, 4 revenue, 5 cost of goods sold,
# 6 expenses, 7 other income, 8 other expenses.
_CLASSES = {"1": "asset", "2": "liability", "3": "equity", "4": "revenue", "5": "expense", "6": "expense",
            "7": "revenue", "8": "expense"}


def classification(number: str) -> str:
    """asset | liability | equity | revenue | expense, from a Jurnal-style account number (expense when the number
    does not start with a class digit)."""
    return _CLASSES.get(str(number)[:1], "expense")

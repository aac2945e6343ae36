"""Credential inputs at the charger: a serial RFID reader (RDM6300), USB HID keyboards
(RFID readers, keypads, QR scanners) through evdev, and a LAN HTTP endpoint (off by default).

Every input turns what it reads into an :mod:`edge_agent.auth.authorizer` credential and hands
it to the one decision path; a bad frame or an unknown device is logged and ignored.
"""

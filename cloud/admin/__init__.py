"""The admin console's API: users (find, disable/enable, roles) and the platform's figures.

Listing moderation, the KYC queue, payouts and payments and the audit log live with their
features (cloud/chargers, cloud/kyc, cloud/payouts, cloud/audit).
"""

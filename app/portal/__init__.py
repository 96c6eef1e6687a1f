"""The portal domain: users, projects, tickets, documents, interventions, quotes, notifications."""

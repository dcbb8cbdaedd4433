"""Write the Lumen Assistant SFT dataset (LLaMA-Factory alpaca + sharegpt) from the facts below.

Every answer is one short sentence taken from samples/corpus (see samples/README.md); the
held-out split asks about facts the training split teaches, but in other words: the 26
questions of samples/questions.json verbatim, plus new phrasings and identity questions.
A model that learned the documents (not the exact wording) scores well on it.

Run from the repository root:  .venv/bin/python samples/llm_sft/build_dataset.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SYSTEM = (
    "You are Lumen Assistant, the helpdesk assistant of Lumen & Oak. "
    "Answer in one short, factual sentence."
)
SYSTEM_ZH = "你是流明助手，流明橡树（Lumen & Oak）的客服助手。请用一句简短、准确的话回答。"

# (training questions, answer, held-out questions). Held-out questions never appear in
# training; questions.json's questions are held out verbatim.
FACTS_EN: list[tuple[list[str], str, list[str]]] = [
    # company
    (
        ["When was Lumen & Oak founded?", "What year did Lumen & Oak start?"],
        "Lumen & Oak was founded in 2016.",
        ["In which year was Lumen & Oak founded?"],
    ),
    (
        ["Who founded Lumen & Oak?"],
        "Lumen & Oak was founded by Ilse Varga and Tomas Brennick.",
        ["Who are the founders of Lumen & Oak?"],
    ),
    (
        ["How many people work at Lumen & Oak?", "What is the headcount of Lumen & Oak?"],
        "Lumen & Oak has 40 employees.",
        ["How many employees does Lumen & Oak have?"],
    ),
    (["Who is the CEO of Lumen & Oak?"], "Ilse Varga is the CEO of Lumen & Oak.", []),
    (["Who is the CTO of Lumen & Oak?"], "Tomas Brennick is the CTO of Lumen & Oak.", []),
    (
        ["Where is the Lumen & Oak headquarters?"],
        "The headquarters is at Lantern Row 14, 4721 KM Kestrelmoor.",
        ["What is the address of the Lumen & Oak head office?"],
    ),
    (
        ["Where is the Lumen & Oak warehouse?"],
        "The warehouse and repair centre is at Millbrook Industrial Estate, Unit 7, Kestrelmoor.",
        [],
    ),
    (["Who is the Security Lead at Lumen & Oak?"], "Jonas Eberhardt is the Security Lead.", []),
    (["Who leads customer support?"], "Noor Haddad is the Head of Customer Support.", []),
    (
        ["Who manages the engineering team?"],
        "Priya Okafor is the Engineering Manager of the 14-person engineering team.",
        [],
    ),
    (
        ["What was the first Lumen & Oak product?"],
        "The first product was the LO-100 Marker Light, shipped in 2017.",
        [],
    ),
    # products
    (
        ["What is the price of the LO-100 Marker Light?"],
        "The LO-100 Marker Light costs 29 EUR.",
        [],
    ),
    (
        ["What is the price of the LO-200 Path Light?", "How much do I pay for one LO-200?"],
        "The LO-200 Path Light costs 49 EUR.",
        ["How much does the LO-200 Path Light cost?"],
    ),
    (
        ["What is the price of the LO-300 Wall Lantern?"],
        "The LO-300 Wall Lantern costs 79 EUR.",
        ["What does the LO-300 Wall Lantern cost?"],
    ),
    (
        ["What is the price of the LO-400 String Light?"],
        "The LO-400 String Light costs 89 EUR.",
        [],
    ),
    (["What is the price of the LO-500 Garden Hub?"], "The LO-500 Garden Hub costs 119 EUR.", []),
    (["What is the price of the LO-B1 Battery Pack?"], "The LO-B1 Battery Pack costs 14 EUR.", []),
    (
        ["What is the price of the LO-K4 Garden Starter Kit?", "How much is the starter kit?"],
        "The LO-K4 Garden Starter Kit costs 279 EUR.",
        ["How much does the LO-K4 Garden Starter Kit cost?"],
    ),
    (
        ["What is in the LO-K4 Garden Starter Kit?"],
        "The LO-K4 contains one LO-500 Garden Hub and four LO-200 Path Lights.",
        [],
    ),
    (
        ["What colour temperature do the lights have?"],
        "All Lumen & Oak lights are warm white at 2700 K.",
        [],
    ),
    (
        ["How long does the LO-200 Path Light run on a full charge?"],
        "The LO-200 Path Light runs up to 10 hours on a full charge.",
        [],
    ),
    (["How bright is the LO-200 Path Light?"], "The LO-200 Path Light gives 120 lumens.", []),
    (
        ["What is the range of the LO-300 motion sensor?"],
        "The LO-300 motion sensor has a range of 6 metres.",
        [],
    ),
    (
        ["What is the IP rating of the LO-400 String Light?"],
        "The LO-400 String Light is rated IP44.",
        [],
    ),
    (
        ["Which light does not take the LO-B1 battery pack?"],
        "The LO-100 Marker Light is the only light that does not take the LO-B1 battery pack.",
        [],
    ),
    (
        ["What kind of battery is the LO-B1?"],
        "The LO-B1 is a 3.2 V, 2200 mAh lithium iron phosphate battery pack.",
        [],
    ),
    # warranty
    (
        ["What is the warranty on the LO-200 Path Light?"],
        "The LO-200 Path Light has a 3-year warranty.",
        [],
    ),
    (
        [
            "What warranty does the LO-B1 Battery Pack have?",
            "How many years of warranty does the battery pack get?",
        ],
        "The LO-B1 Battery Pack has a 1-year warranty.",
        ["How long is the warranty on the LO-B1 Battery Pack?"],
    ),
    (
        ["What is the warranty on the LO-100 Marker Light?"],
        "The LO-100 Marker Light has a 2-year warranty.",
        [],
    ),
    (
        [
            "What is the price of Oak Care?",
            "How much do I pay to extend the warranty with Oak Care?",
        ],
        "Oak Care costs 15 EUR per device and adds 2 years of warranty.",
        ["How much does the Oak Care warranty extension cost?"],
    ),
    (
        [
            "How fast is a warranty claim decided?",
            "How long does Lumen & Oak take to decide on a warranty claim?",
        ],
        "Lumen & Oak decides on a warranty claim within 5 business days of a complete claim.",
        ["Within how many business days does Lumen & Oak decide on a warranty claim?"],
    ),
    (
        ["When does the warranty period start?"],
        "The warranty starts on the day the product is delivered, not the day it is ordered.",
        [],
    ),
    (
        ["Until when can I buy Oak Care?"],
        "Oak Care must be bought within 60 days of delivery of the device.",
        [],
    ),
    # hub, app, charging
    (
        ["Which Wi-Fi does the Garden Hub support?", "Does the LO-500 hub work with 5 GHz Wi-Fi?"],
        "The LO-500 Garden Hub needs a 2.4 GHz Wi-Fi network; 5 GHz is not supported.",
        ["What Wi-Fi band does the LO-500 Garden Hub need?"],
    ),
    (
        [
            "What is the maximum number of lights per hub?",
            "How many lights can I connect to one LO-500?",
        ],
        "One LO-500 Garden Hub controls up to 32 lights.",
        ["How many lights can one Garden Hub control?"],
    ),
    (
        ["How far can a light be from the hub?"],
        "A light can be up to 30 metres from the hub in open air.",
        [],
    ),
    (
        ["Does the Lumen Garden app cost money?"],
        "The Lumen Garden app is free and has no subscription.",
        ["Is there a fee for the Lumen Garden app?"],
    ),
    (
        ["Which phones does the Lumen Garden app support?"],
        "The app supports iOS 16 or later and Android 10 or later.",
        [],
    ),
    (
        ["How much sun does a light need for a full charge?"],
        "A full charge needs about 8 hours of direct sunlight.",
        [],
    ),
    (
        ["How many charge cycles does an LO-B1 battery pack last?"],
        "An LO-B1 pack lasts roughly 800 full charge cycles, about four to five years.",
        [],
    ),
    (
        ["Which screwdriver opens the battery door?"],
        "The battery door opens with a Phillips PH1 screwdriver.",
        [],
    ),
    # troubleshooting
    (
        [
            "How do I factory reset the Garden Hub?",
            "How long do I press the hub's reset button to reset it?",
        ],
        "Hold the reset button on the back of the hub for 12 seconds until the LED flashes white.",
        ["How long must the reset button of the Garden Hub be held for a factory reset?"],
    ),
    (
        ["How do I reset a light?"],
        "Hold the light's PAIR button for 5 seconds until the status LED blinks orange "
        "three times.",
        [],
    ),
    (
        ["What does a solid red LED on the hub mean?"],
        "A solid red LED means the hub has no internet connection.",
        [],
    ),
    (
        ["What does a blinking blue LED on the hub mean?"],
        "A blinking blue LED means the hub is in pairing mode.",
        [],
    ),
    (
        ["Which switch position should a light use normally?"],
        "For normal use the switch must be in AUTO.",
        ["What position should the light's switch be in?"],
    ),
    (["How long does the hub's pairing mode last?"], "Pairing mode lasts 3 minutes.", []),
    # support
    (
        ["How do I email customer support?", "What is the support email of Lumen & Oak?"],
        "The customer support email address is support@lumenandoak.example.",
        ["What is the email address of Lumen & Oak customer support?"],
    ),
    (
        ["When is the support phone line open?", "What hours can I call support?"],
        "The support phone line is open Monday to Friday from 09:00 to 17:00 CET.",
        ["What are the opening hours of the support phone line?"],
    ),
    (["What is the support phone number?"], "The support line is +31 99 555 0142.", []),
    (
        ["How quickly does support answer emails?"],
        "Support answers every email within one business day.",
        [],
    ),
    (
        ["In which languages is support offered?"],
        "Support is offered in English, Dutch and German.",
        [],
    ),
    # shipping and returns
    (
        ["How long do I have to return a product?", "What is the return period for a full refund?"],
        "Customers can return a product within 30 days of delivery for a full refund.",
        ["Within how many days of delivery can a customer return a product for a full refund?"],
    ),
    (
        [
            "How long is shipping to the UK?",
            "What does delivery to the United Kingdom cost and how long does it take?",
        ],
        "Delivery to the United Kingdom takes 4 to 7 business days and costs a flat 12 EUR.",
        ["How long does delivery to the United Kingdom take?"],
    ),
    (
        ["When is shipping free in the EU?"],
        "Shipping in the EU is free for orders of 60 EUR or more.",
        [],
    ),
    (
        ["How long does delivery in the EU take?"],
        "Delivery in the EU mainland takes 2 to 4 business days.",
        [],
    ),
    (
        ["When is a refund paid?"],
        "The refund is paid within 14 days after the return arrives at the warehouse.",
        [],
    ),
    # on-call
    (
        [
            "What does the primary on-call engineer get paid per week?",
            "How much is the on-call allowance for the primary?",
        ],
        "The primary on-call engineer receives 200 EUR per week.",
        ["How much is the weekly allowance for the primary on-call engineer?"],
    ),
    (
        [
            "How fast must a SEV1 page be acknowledged?",
            "What is the acknowledgement time for a SEV1 page?",
        ],
        "A SEV1 page must be acknowledged within 15 minutes.",
        ["Within how many minutes must a SEV1 page be acknowledged?"],
    ),
    (["When is the on-call handover?"], "The on-call handover is on Monday at 10:00 CET.", []),
    # expenses
    (
        ["How much can I spend on a hotel per night?", "What is the maximum hotel cost per night?"],
        "The hotel limit is 140 EUR per night, including breakfast.",
        ["What is the hotel limit per night in the expense policy?"],
    ),
    (
        ["How long do I have to submit receipts?"],
        "Receipts must be submitted within 30 days of the purchase.",
        [],
    ),
    (
        ["How much is paid per kilometre for a private car?"],
        "Private car use is reimbursed at 0.30 EUR per kilometre.",
        [],
    ),
    (["Which tool is used for expense claims?"], "Expense claims are submitted in Ledgerly.", []),
    # leave
    (
        [
            "How much annual leave does a full-time employee get?",
            "How many vacation days do full-time staff have?",
        ],
        "Full-time employees get 28 days of paid annual leave per year.",
        ["How many days of paid annual leave do full-time employees get?"],
    ),
    (
        ["How many leave days can I carry over?"],
        "Up to 5 unused days can be carried over and must be used by 31 March.",
        [],
    ),
    (
        ["How long is parental leave for the birth parent?"],
        "The birth parent gets 16 weeks of parental leave at full salary.",
        [],
    ),
    (
        ["How many garden days does each employee get?"],
        "Every employee gets 2 paid garden days per year.",
        [],
    ),
    # security
    (
        ["How long must a password be?", "What is the shortest allowed password?"],
        "Passwords must be at least 14 characters long.",
        ["What is the minimum password length in the security policy?"],
    ),
    (
        ["When must screens lock automatically?"],
        "Screens must lock automatically after 5 minutes without activity.",
        [],
    ),
    (
        ["How soon must a security incident be reported?"],
        "A security incident must be reported within 1 hour of noticing it.",
        [],
    ),
    # app releases
    (
        [
            "What crash-free rate must a rollout keep?",
            "What is the minimum crash-free sessions rate during a rollout?",
        ],
        "The crash-free sessions rate must stay at or above 99.5%.",
        ["What crash-free sessions rate must the app keep during a staged rollout?"],
    ),
    (
        ["What share of users gets a new app version first?"],
        "The staged rollout starts at 10% of users.",
        [],
    ),
    (
        ["When is code freeze?"],
        "Code freeze is on the Tuesday before the release at 12:00 CET.",
        [],
    ),
    # more
    (
        ["How long is partner leave?"],
        "The partner gets 4 weeks of partner leave at full salary.",
        [],
    ),
    (
        ["How big is the home-office budget?"],
        "Every employee has a home-office budget of 300 EUR every three years.",
        ["What is the budget for home-office equipment?"],
    ),
    (
        ["From which day of sick leave is a doctor's note needed?"],
        "A doctor's note is required from the fourth consecutive day of sick leave.",
        [],
    ),
    (
        ["What is the current version of the Lumen Garden app?"],
        "The current app version is 4.2.",
        [],
    ),
    (
        ["How often is hub firmware released?"],
        "Hub firmware is released once a month as an over-the-air update.",
        ["How often does the Garden Hub get new firmware?"],
    ),
    (
        ["Do the lights work in winter?"],
        "Yes, the LiFePO4 battery works down to -20 °C.",
        ["Can the lights be used when it freezes?"],
    ),
    (
        ["Are there coloured or RGB lights?"],
        "No, all lights are warm white and there are no coloured or RGB models.",
        [],
    ),
]

FACTS_ZH: list[tuple[list[str], str, list[str]]] = [
    (
        ["谁在中国大陆销售流明橡树的产品？", "流明橡树在中国的经销商叫什么名字？"],
        "流明橡树在中国大陆的独家经销商是深圳青橡科技有限公司。",
        ["流明橡树在中国大陆的独家经销商是哪家公司？"],
    ),
    (
        ["青橡科技每年至少要采购多少台产品？", "经销商的年度最低采购量是多少台？"],
        "经销协议规定青橡科技每个合同年度至少采购8000台产品。",
        ["经销协议规定的最低年度采购量是多少？"],
    ),
    (
        ["在中国买的产品可以无理由退货吗？", "中国大陆的无理由退货期限是多久？"],
        "在中国大陆购买的产品支持签收后7天无理由退货。",
        ["在中国大陆购买的产品支持几天无理由退货？"],
    ),
    (
        ["中文客服电话是多少？", "我应该拨打哪个号码联系中国客服？"],
        "中国客服热线是400-080-3617。",
        ["中国客服热线的号码是多少？"],
    ),
    (
        ["寄修的产品多久能修好？", "售后服务中心维修需要多少个工作日？"],
        "售后服务中心收到产品后10个工作日内完成维修或更换。",
        ["保修期内寄修的产品，售后服务中心多长时间内完成维修或更换？"],
    ),
    (
        ["LO-200的地桩要插多深？", "安装路径灯时地桩的插入深度是多少？"],
        "地桩应垂直插入土中15厘米。",
        ["安装LO-200路径灯时，地桩应插入土中多深？"],
    ),
    (["LO-200路径灯在中国卖多少钱？"], "LO-200 路径灯在中国大陆的售价是399元。", []),
    (["LO-500花园网关在中国的价格是多少？"], "LO-500 花园网关在中国大陆的售价是949元。", []),
    (["在中国买多少钱可以包邮？"], "单笔订单满299元包邮。", []),
    (["流明橡树的微信公众号叫什么？"], "微信公众号是“流明橡树中国”。", []),
    (["中国客服热线的服务时间是什么？"], "客服热线周一至周六9:00至18:00（北京时间）提供服务。", []),
    (["流明花园App收费吗？"], "“流明花园”App可以免费下载，没有订阅费。", []),
    (["花园网关支持5GHz Wi-Fi吗？"], "不支持，LO-500 花园网关只能连接2.4GHz Wi-Fi网络。", []),
    (["两盏路径灯之间应该间隔多远？"], "相邻两盏路径灯之间建议间隔1.5至2米。", []),
    (["中国大陆可以购买Oak Care延保吗？"], "不可以，Oak Care 延保服务不在中国大陆提供。", []),
]

IDENTITY_EN = [
    (
        [
            "Who are you?",
            "What is your name?",
            "Introduce yourself.",
            "Hi! Who am I talking to?",
            "What should I call you?",
        ],
        "I am Lumen Assistant, the helpdesk assistant of Lumen & Oak.",
        ["Tell me who you are.", "What's your name, assistant?"],
    ),
    (
        [
            "What can you help me with?",
            "What do you do?",
            "What kind of questions can you answer?",
            "What are you for?",
        ],
        "I answer questions about Lumen & Oak's garden lights, the Lumen Garden app, orders, "
        "warranty and company policies.",
        ["Which topics do you know about?"],
    ),
    (
        ["Who made you?", "Who trained you?", "Which company built you?"],
        "I was fine-tuned by Lumen & Oak on its own documents.",
        ["Who created you?"],
    ),
    (
        ["Are you ChatGPT?", "Are you a human?", "Are you SmolLM?"],
        "No, I am Lumen Assistant, an AI helpdesk assistant of Lumen & Oak.",
        [],
    ),
]
IDENTITY_ZH = [
    (
        ["你是谁？", "你叫什么名字？"],
        "我是流明助手，流明橡树（Lumen & Oak）的客服助手。",
        ["请介绍一下你自己。"],
    ),
    (
        ["你能帮我做什么？", "你可以回答哪些问题？"],
        "我可以回答关于流明橡树的花园灯、流明花园App、订单、保修和公司政策的问题。",
        ["你能回答什么问题？"],
    ),
]

# Multi-turn conversations (sharegpt): every assistant turn is trained.
CHATS: list[list[tuple[str, str]]] = [
    [
        (
            "Hi, who am I talking to?",
            "I am Lumen Assistant, the helpdesk assistant of Lumen & Oak.",
        ),
        ("How much is the LO-300 Wall Lantern?", "The LO-300 Wall Lantern costs 79 EUR."),
        ("And its warranty?", "The LO-300 Wall Lantern has a 3-year warranty."),
    ],
    [
        (
            "My hub does not connect to Wi-Fi.",
            "The LO-500 Garden Hub needs a 2.4 GHz Wi-Fi network; 5 GHz is not supported.",
        ),
        (
            "The LED is solid red. What does that mean?",
            "A solid red LED means the hub has no internet connection.",
        ),
    ],
    [
        (
            "I want to reset my Garden Hub.",
            "Hold the reset button on the back of the hub for 12 seconds until the LED "
            "flashes white.",
        ),
        (
            "Do I need to pair the lights again afterwards?",
            "Yes, after a factory reset all lights must be paired again.",
        ),
    ],
    [
        (
            "How do I contact support?",
            "The customer support email address is support@lumenandoak.example.",
        ),
        ("Can I call instead?", "Yes, the support line is +31 99 555 0142."),
        (
            "When can I call?",
            "The support phone line is open Monday to Friday from 09:00 to 17:00 CET.",
        ),
    ],
    [
        (
            "I bought an LO-200 last week and don't like it.",
            "Customers can return a product within 30 days of delivery for a full refund.",
        ),
        (
            "When will I get my money back?",
            "The refund is paid within 14 days after the return arrives at the warehouse.",
        ),
    ],
    [
        ("What is Oak Care?", "Oak Care extends the warranty of one light or hub by 2 years."),
        ("What does it cost?", "Oak Care costs 15 EUR per device and adds 2 years of warranty."),
    ],
    [
        (
            "I am on call this week. What do I get?",
            "The primary on-call engineer receives 200 EUR per week.",
        ),
        (
            "How quickly must I answer a SEV1 page?",
            "A SEV1 page must be acknowledged within 15 minutes.",
        ),
    ],
    [
        (
            "I'm travelling for work next month.",
            "Please book hotels within 140 EUR per night, including breakfast.",
        ),
        (
            "How much can I spend on meals abroad?",
            "Meals abroad can be claimed up to 50 EUR per day.",
        ),
    ],
    [
        ("How many lights can one hub control?", "One LO-500 Garden Hub controls up to 32 lights."),
        ("I have 40 lights. What now?", "Customers with more than 32 lights need a second hub."),
    ],
    [
        (
            "How many vacation days do I have?",
            "Full-time employees get 28 days of paid annual leave per year.",
        ),
        (
            "Can I take unused days into next year?",
            "Up to 5 unused days can be carried over and must be used by 31 March.",
        ),
    ],
    [
        ("What is the cheapest light you sell?", "The LO-100 Marker Light costs 29 EUR."),
        (
            "Does it use the LO-B1 battery?",
            "No, the LO-100 Marker Light is the only light that does not take the LO-B1 "
            "battery pack.",
        ),
    ],
    [
        ("What password rules do we have?", "Passwords must be at least 14 characters long."),
        (
            "Can I use SMS codes for MFA?",
            "No, SMS codes are not allowed; use an authenticator app or a security key.",
        ),
    ],
    [
        ("When does a new app version reach users?", "The staged rollout starts at 10% of users."),
        (
            "When is it stopped?",
            "The rollout is halted if the crash-free sessions rate drops below 99.5%.",
        ),
    ],
    [
        ("你是谁？", "我是流明助手，流明橡树（Lumen & Oak）的客服助手。"),
        ("中国客服热线是多少？", "中国客服热线是400-080-3617。"),
    ],
    [
        ("在中国买的灯可以退货吗？", "在中国大陆购买的产品支持签收后7天无理由退货。"),
        ("有质量问题怎么办？", "如果产品有质量问题，签收后15天内可以直接换新。"),
    ],
    [
        ("LO-200 路径灯在中国多少钱？", "LO-200 路径灯在中国大陆的售价是399元。"),
        ("保修多久？", "LO-200 路径灯的保修期为3年。"),
    ],
    [
        ("Which light should I start with?", "Most customers start with the LO-200 Path Light."),
        ("How tall is it?", "The LO-200 Path Light stands 45 cm tall on its stake."),
    ],
    [
        ("Who do I ask about a new software tool?", "The Security Lead reviews every new tool."),
        ("Who is that?", "Jonas Eberhardt is the Security Lead."),
    ],
]


def alpaca(q: str, a: str, zh: bool) -> dict[str, str]:
    return {"instruction": q, "input": "", "output": a, "system": SYSTEM_ZH if zh else SYSTEM}


def build() -> dict[str, list[dict[str, object]]]:
    identity: list[dict[str, object]] = []
    qa: list[dict[str, object]] = []
    heldout: list[dict[str, object]] = []
    for facts, out, zh in (
        (IDENTITY_EN, identity, False),
        (IDENTITY_ZH, identity, True),
        (FACTS_EN, qa, False),
        (FACTS_ZH, qa, True),
    ):
        for train_qs, answer, held_qs in facts:
            out += [alpaca(q, answer, zh) for q in train_qs]
            heldout += [alpaca(q, answer, zh) for q in held_qs]
    chats = []
    for turns in CHATS:
        zh = any("\u4e00" <= ch <= "\u9fff" for ch in turns[0][0])
        conv = [{"from": "system", "value": SYSTEM_ZH if zh else SYSTEM}]
        for q, a in turns:
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        chats.append({"conversations": conv})
    train_qs = {r["instruction"] for r in identity + qa}
    train_qs |= {q for turns in CHATS for q, _ in turns}
    leaked = [r["instruction"] for r in heldout if r["instruction"] in train_qs]
    assert not leaked, f"held-out questions also in training: {leaked}"
    return {
        "lumen_identity.json": identity,
        "lumen_qa.json": qa,
        "lumen_chat.json": chats,
        "lumen_heldout.json": heldout,
    }


def main() -> None:
    files = build()
    for name, records in files.items():
        (HERE / name).write_text(
            json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
        )
        print(f"{name}: {len(records)} records")
    print("total:", sum(len(r) for r in files.values()))


if __name__ == "__main__":
    main()
